"""The key CDN: serves public keys to everyone alike, cacheably."""
