from bijros.cli import entry

if __name__ == "__main__":  # guarded: batch workers (multiprocessing, spawn) import this module as __mp_main__
    entry()
