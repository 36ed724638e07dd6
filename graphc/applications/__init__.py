"""Reference architectures (Keras applications), built from graphc layers."""
