"""Loss terms of the methods in nnunet-ext (small pure functions plus thin ``nn.Module`` wrappers)."""
