"""A pytest plugin for the mutation runs (run.sh puts this folder on PYTHONPATH; mutmut.cfg loads it
with -p): mutmut forks one process per mutant from the process that timed the tests, so every lock
that process holds or shares is inherited. tqdm's progress bars take a multiprocessing lock, a
semaphore shared by all those processes: a mutant's process killed on timeout while holding it
blocked every later mutant that made a progress bar (each then timed out too). Without it tqdm
takes a thread lock, private to each process; without its monitor thread no other thread can hold
that one when the process forks."""
from tqdm import tqdm
from tqdm.std import TqdmDefaultWriteLock

TqdmDefaultWriteLock.mp_lock = None
tqdm.monitor_interval = 0
