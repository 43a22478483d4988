"""Network architectures of the methods in nnunet-ext (one module per method)."""
