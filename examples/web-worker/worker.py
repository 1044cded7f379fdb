"""The worker process: does background work and logs a line every few seconds."""

import signal
import sys
import time

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
tick = 0
while True:
    tick += 1
    print(f"worker tick {tick}", flush=True)
    time.sleep(2)
