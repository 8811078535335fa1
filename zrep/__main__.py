"""`python -m zrep ...`: the same commands as the `zrep` console script."""

from zrep.cli import main

if __name__ == "__main__":
    main(prog_name="zrep")
