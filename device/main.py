# neighbourgrid meter: start the firmware on the board (device/hal.py is the hardware).
import hal
from ngmeter.config import ConfigError
from ngmeter.runner import Runner
from ngmeter.store import StateError

try:
    Runner(hal, "/").run()
except (ConfigError, StateError) as err:
    # Nothing safe to do without a valid config/state: say why, and stay at the REPL.
    print("ngmeter: cannot start:", err)
except Exception as err:
    print("ngmeter: crashed:", repr(err))
    hal.sleep_ms(5000)
    hal.reset()
