import sys

from harness.cli import main

if __name__ == "__main__":  # vLLM and sglang-jax may spawn workers that re-import __main__
    sys.exit(main())
