"""Data sets: MNIST and Fashion-MNIST readers (IDX or Keras npz), the 2D Ising model, and batching."""

from .batches import batches
from .ising import ising
from .mnist import load_fashion_mnist, load_mnist

__all__ = ["load_mnist", "load_fashion_mnist", "ising", "batches"]
