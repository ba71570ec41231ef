"""The Anonymous Credential Service: authenticates accounts, issues unlinkable tokens."""
