# neighbourgrid meter: runs first after every reset. Keep it tiny: main.py does the work.
import gc

gc.collect()
