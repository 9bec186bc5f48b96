"""`python -m gvtool`, which is how torchrun starts the command: `torchrun --nproc-per-node N -m gvtool train ...`."""

from gvtool.cli import main

if __name__ == "__main__":
    main(prog_name="gvtool")
