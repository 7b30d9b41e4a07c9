"""Train the reference CNN on Fashion-MNIST (28x28 grey images of ten kinds of clothes).

    python examples/train_fashion_mnist.py                          # 2 epochs over all 60,000 images
    python examples/train_fashion_mnist.py --limit 2000 --epochs 1  # a quick run

The training loop is the one in ``train_mnist.py`` (same options); only the loader differs. The data
are found as docs/data.md describes; on Debian, ``apt-get install dataset-fashion-mnist`` puts them in
``/usr/share/datasets/fashion-mnist``, which the loader searches.
"""

import sys

from train_mnist import main

from tinygrad_cnn.data import load_fashion_mnist

if __name__ == "__main__":
    sys.exit(main(load=load_fashion_mnist, name="Fashion-MNIST"))
