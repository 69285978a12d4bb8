"""End-to-end benchmark grid (the same as ``lpfast bench``); see :mod:`lpfast.benchmark`.

    python bench/e2e.py sph --model resnet20 --dataset cifar10 --epochs 3 --parallel-epochs 2
"""
from lpfast.benchmark import main

if __name__ == "__main__":
    main()
