"""`python -m sgproject ...` (and `torchrun -m sgproject ...`) runs the CLI."""

from sgproject.cli import main

if __name__ == "__main__":
    main()
