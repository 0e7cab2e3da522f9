"""`python -m promptrec ...`: the same command line as `promptrec ...`."""

from promptrec.cli import main

if __name__ == "__main__":
    main()
