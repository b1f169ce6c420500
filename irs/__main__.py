import os
import sys

from irs.cli import main

try:
    code = main()
    sys.stdout.flush()  # here, where a reader that went away can still be answered
except BrokenPipeError:  # `irs stats | head`: the reader left; stop quietly, as Unix tools do on SIGPIPE
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the flush at exit must not fail again
    code = 141
raise SystemExit(code)
