# neighbourgrid meter: start the firmware on the board (device/hal.py is the hardware).
import hal
from ngmeter.config import ConfigError
from ngmeter.runner import Runner
from ngmeter.store import StateError

try:
    runner = Runner(hal, "/")
    schedule = getattr(hal, "schedule", None)
    if schedule is not None:
        # An event-driven host (the virtual board) calls runner.step() from its own loop.
        schedule(runner.step)
    else:
        runner.run()
except (ConfigError, StateError) as err:
    # Nothing safe to do without a valid config/state: say why, and stay at the REPL.
    print("ngmeter: cannot start:", err)
except Exception as err:
    print("ngmeter: crashed:", repr(err))
    hal.sleep_ms(5000)
    hal.reset()
