"""The raw RSA private operation RSASP1 (RFC 8017 §5.2.1), done natively by OpenSSL.

RSA blind signatures (RFC 9474) need the bare private operation
``s = m^d mod n`` on a client-chosen ``m``. ``cryptography`` does not
expose it, and Python's ``pow(m, d, n)`` is slow and not constant time, so
:class:`NativeRsaPrivateKey` calls OpenSSL 3's libcrypto through
:mod:`ctypes`: ``EVP_PKEY_decrypt`` with ``RSA_NO_PADDING`` is exactly
RSASP1, and OpenSSL applies RSA blinding and constant-time modular
exponentiation to every private-key operation by default.

The libcrypto used is the one Python's own :mod:`ssl` module links against:
the ``_ssl`` extension is opened with ``dlopen`` and the symbols are looked
up through its handle, which resolves them in the libraries it depends on.
Only if that fails are ``ctypes.util.find_library("crypto")`` and the
OpenSSL 3 sonames tried. Whatever is found must report OpenSSL 3 or later.

Every result is checked with the public operation before it is returned
(RFC 9474 §4.3, against fault attacks). :func:`rsasp1_reference` is a pure
Python RSASP1 for tests only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.util
import sys
import weakref
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from privproc.errors import CryptoError

#: ``RSA_NO_PADDING`` from ``<openssl/rsa.h>``.
RSA_NO_PADDING = 3
#: ``EVP_PKEY_RSA`` (``NID_rsaEncryption``) from ``<openssl/evp.h>``.
EVP_PKEY_RSA = 6
#: ``OPENSSL_VERSION`` for ``OpenSSL_version()``.
_OPENSSL_VERSION = 0
_MIN_OPENSSL_MAJOR = 3


class NativeCryptoError(CryptoError):
    """The native RSA operation could not run or gave a wrong result.

    A fault on the server, not in the peer's input (mapped to 500 / INTERNAL by
    :mod:`privproc.runtime.status`).
    """

    reason = "crypto_internal"


class LibcryptoUnavailableError(NativeCryptoError):
    """No usable OpenSSL 3 libcrypto could be loaded into this process."""

    reason = "crypto_unavailable"


_Function = Callable[..., Any]


class _Libcrypto:
    """The libcrypto functions this module calls, with their C prototypes."""

    def __init__(self, lib: ctypes.CDLL, origin: str) -> None:
        def bind(name: str, restype: Any, *argtypes: Any) -> _Function:
            function = getattr(lib, name)  # AttributeError if the symbol is missing
            function.restype = restype
            function.argtypes = argtypes
            return function  # type: ignore[no-any-return]

        vp = ctypes.c_void_p
        self.origin = origin
        self.OpenSSL_version_num = bind("OpenSSL_version_num", ctypes.c_ulong)
        self.OpenSSL_version = bind("OpenSSL_version", ctypes.c_char_p, ctypes.c_int)
        self.ERR_clear_error = bind("ERR_clear_error", None)
        self.d2i_AutoPrivateKey = bind(
            "d2i_AutoPrivateKey", vp, vp, ctypes.POINTER(ctypes.c_void_p), ctypes.c_long
        )
        self.EVP_PKEY_free = bind("EVP_PKEY_free", None, vp)
        self.EVP_PKEY_get_base_id = bind("EVP_PKEY_get_base_id", ctypes.c_int, vp)
        self.EVP_PKEY_get_size = bind("EVP_PKEY_get_size", ctypes.c_int, vp)
        self.EVP_PKEY_CTX_new = bind("EVP_PKEY_CTX_new", vp, vp, vp)
        self.EVP_PKEY_CTX_free = bind("EVP_PKEY_CTX_free", None, vp)
        self.EVP_PKEY_decrypt_init = bind("EVP_PKEY_decrypt_init", ctypes.c_int, vp)
        self.EVP_PKEY_encrypt_init = bind("EVP_PKEY_encrypt_init", ctypes.c_int, vp)
        self.EVP_PKEY_CTX_set_rsa_padding = bind(
            "EVP_PKEY_CTX_set_rsa_padding", ctypes.c_int, vp, ctypes.c_int
        )
        # Both: int (EVP_PKEY_CTX *, unsigned char *out, size_t *outlen, const unsigned char *in, size_t)
        crypt = (ctypes.c_int, vp, vp, ctypes.POINTER(ctypes.c_size_t), ctypes.c_char_p, ctypes.c_size_t)
        self.EVP_PKEY_decrypt = bind("EVP_PKEY_decrypt", *crypt)
        self.EVP_PKEY_encrypt = bind("EVP_PKEY_encrypt", *crypt)

    @property
    def major(self) -> int:
        return int(self.OpenSSL_version_num()) >> 28

    @property
    def version(self) -> str:
        text = self.OpenSSL_version(_OPENSSL_VERSION)
        return text.decode("ascii", "replace") if isinstance(text, bytes) else "unknown"

    def fail(self, error: CryptoError) -> NoReturn:
        """Raise ``error`` after dropping OpenSSL's queued errors for this thread.

        Left behind, they would be reported by the next unrelated OpenSSL user
        in this thread (such as the :mod:`ssl` module).
        """
        self.ERR_clear_error()
        raise error


def _candidates() -> Iterator[tuple[str, str]]:
    """``(origin, name for dlopen)`` of each libcrypto to try, best first."""
    spec = importlib.util.find_spec("_ssl")
    if spec is not None and spec.origin and spec.has_location:
        # dlsym through the extension's handle searches its dependencies too:
        # this is the very libcrypto the ssl module uses.
        yield "_ssl extension", spec.origin
    found = ctypes.util.find_library("crypto")
    # An unversioned macOS system libcrypto aborts the process when loaded.
    if found and not (sys.platform == "darwin" and ".3" not in found):
        yield "find_library", found
    for soname in ("libcrypto.so.3", "libcrypto.3.dylib", "libcrypto-3-x64.dll", "libcrypto-3.dll"):
        yield "soname", soname


@functools.cache
def _load() -> _Libcrypto | None:
    for origin, name in _candidates():
        try:
            libcrypto = _Libcrypto(ctypes.CDLL(name), origin)
        except (OSError, AttributeError):
            continue
        if libcrypto.major >= _MIN_OPENSSL_MAJOR:
            return libcrypto
    return None


def _libcrypto() -> _Libcrypto:
    libcrypto = _load()
    if libcrypto is None:
        raise LibcryptoUnavailableError("no usable OpenSSL 3 libcrypto found")
    return libcrypto


def openssl_version() -> str:
    """The libcrypto in use and how it was found, e.g. ``OpenSSL 3.0.13 ... (_ssl extension)``."""
    libcrypto = _libcrypto()
    return f"{libcrypto.version} ({libcrypto.origin})"


def _check_input(message: bytes, modulus: int, modulus_len: int) -> int:
    """RSASP1's input as an integer: exactly ``modulus_len`` bytes and below ``n``."""
    if len(message) != modulus_len:
        raise CryptoError("unexpected input size")
    m = int.from_bytes(message, "big")
    if m >= modulus:
        raise CryptoError("message representative out of range")
    return m


class NativeRsaPrivateKey:
    """An RSA private key loaded into OpenSSL, for RSASP1 only.

    The ``EVP_PKEY`` lives as long as this object and is freed with it. Each
    call gets its own ``EVP_PKEY_CTX``, so one key serves many threads at
    once (``ctypes`` releases the GIL around the OpenSSL calls).
    """

    __slots__ = ("__weakref__", "_e", "_lib", "_modulus_len", "_n", "_pkey", "_public_key")

    def __init__(self, private_key: rsa.RSAPrivateKey) -> None:
        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise TypeError("an RSA private key is required")
        lib = _libcrypto()
        self._lib = lib
        self._public_key = private_key.public_key()
        numbers = self._public_key.public_numbers()
        self._n = numbers.n
        self._e = numbers.e
        self._modulus_len = (self._n.bit_length() + 7) // 8
        self._pkey = self._load(lib, private_key)
        weakref.finalize(self, lib.EVP_PKEY_free, self._pkey)
        # Fails here, not on a peer's request, if OpenSSL holds another key.
        self.rsasp1((2).to_bytes(self._modulus_len, "big"))

    def _load(self, lib: _Libcrypto, private_key: rsa.RSAPrivateKey) -> int:
        der = private_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        buffer = ctypes.create_string_buffer(der, len(der))
        start = ctypes.addressof(buffer)
        cursor = ctypes.c_void_p(start)
        try:
            pkey = lib.d2i_AutoPrivateKey(None, ctypes.byref(cursor), len(der))
            consumed = (cursor.value or start) - start
        finally:
            ctypes.memset(buffer, 0, len(der))
        if not pkey:
            lib.fail(CryptoError("private key could not be loaded natively"))
        if (
            consumed != len(der)
            or lib.EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA
            or lib.EVP_PKEY_get_size(pkey) != self._modulus_len
        ):
            lib.EVP_PKEY_free(pkey)
            lib.fail(CryptoError("private key could not be loaded natively"))
        return int(pkey)

    def __reduce__(self) -> NoReturn:
        raise TypeError("a native RSA key cannot be copied or pickled")

    def __copy__(self) -> NoReturn:
        raise TypeError("a native RSA key cannot be copied or pickled")

    def __deepcopy__(self, memo: object) -> NoReturn:
        raise TypeError("a native RSA key cannot be copied or pickled")

    def __repr__(self) -> str:
        return f"<NativeRsaPrivateKey {self._n.bit_length()}-bit>"

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self._public_key

    @property
    def modulus_len(self) -> int:
        """``k``: the length in bytes of the modulus, of every input and output."""
        return self._modulus_len

    def rsasp1(self, message: bytes) -> bytes:
        """``s = m^d mod n`` for the ``k``-byte big-endian ``message``, checked.

        Raises :class:`~privproc.errors.CryptoError` if ``message`` is not
        exactly ``k`` bytes or not below ``n``, and :class:`NativeCryptoError`
        if OpenSSL fails or its result does not verify (``s^e mod n != m``).
        """
        _check_input(message, self._n, self._modulus_len)
        lib = self._lib
        signature = self._raw(lib.EVP_PKEY_decrypt_init, lib.EVP_PKEY_decrypt, message)
        # RFC 9474 §4.3: verify before release, so a faulty result (which
        # could reveal the key, e.g. a CRT fault) never leaves the process.
        # The check is the public operation s^e mod n, in OpenSSL too: a
        # fifth of the cost of Python's pow, and a fault in the private
        # path cannot also make the public one agree.
        if self._public_op(signature) != message:
            raise NativeCryptoError("signature failed verification")
        return signature

    def _public_op(self, signature: bytes) -> bytes:
        """RSAVP1 (``s^e mod n``) through OpenSSL, raw."""
        return self._raw(self._lib.EVP_PKEY_encrypt_init, self._lib.EVP_PKEY_encrypt, signature)

    def _raw(self, init: Any, operation: Any, data: bytes) -> bytes:
        """One unpadded RSA operation on this key (private for decrypt, public for encrypt)."""
        lib = self._lib
        out = ctypes.create_string_buffer(self._modulus_len)
        out_len = ctypes.c_size_t(self._modulus_len)
        ctx = lib.EVP_PKEY_CTX_new(self._pkey, None)
        if not ctx:
            lib.fail(NativeCryptoError("native RSA operation failed"))
        try:
            ok = (
                init(ctx) == 1
                and lib.EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_NO_PADDING) > 0
                and operation(ctx, out, ctypes.byref(out_len), data, len(data)) == 1
            )
        finally:
            lib.EVP_PKEY_CTX_free(ctx)
        if not ok or out_len.value != self._modulus_len:
            lib.fail(NativeCryptoError("native RSA operation failed"))
        return out.raw


def rsasp1_reference(private_key: rsa.RSAPrivateKey, message: bytes) -> bytes:
    """RSASP1 as plain Python ``pow(m, d, n)``: a reference for TESTS ONLY.

    Never use it with a production key: it is slow, it does not blind, and
    its running time depends on the private exponent. It exists so tests
    can compare :meth:`NativeRsaPrivateKey.rsasp1` against the definition.
    """
    numbers = private_key.private_numbers()
    n = numbers.public_numbers.n
    modulus_len = (n.bit_length() + 7) // 8
    m = _check_input(message, n, modulus_len)
    return pow(m, numbers.d, n).to_bytes(modulus_len, "big")
