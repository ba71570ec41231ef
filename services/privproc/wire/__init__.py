"""Sans-I/O wire formats shared by every producer and consumer."""
