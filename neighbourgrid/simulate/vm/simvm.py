# The simulation's side of a meter in the MicroPython VM: a hal whose sensors and clock the host
# sets before each step, and umqtt.simple's client API whose traffic the host relays to the real
# broker (the WebAssembly port has no sockets). Runs on MicroPython; the firmware is unchanged.
import binascii
import json

from ngmeter import config as fwconfig
from ngmeter.runner import Runner

TICKS = 1 << 30


def _b64(data):
    return binascii.b2a_base64(data).decode().strip()


class Bridge:
    """umqtt.simple's MQTTClient API; every call becomes an event the host carries out."""

    def __init__(self, sim):
        self.sim = sim
        self.cb = None
        self.sock = self

    def close(self):
        self.sim.events.append(["close"])

    def set_callback(self, cb):
        self.cb = cb

    def set_last_will(self, topic, msg, retain=False, qos=0):
        self.sim.events.append(["will", topic, _b64(msg), retain, qos])

    def connect(self, clean_session=True):
        if not self.sim.link:
            raise OSError("no link to the broker")
        self.sim.events.append(["connect"])
        return 0

    def subscribe(self, topic, qos=0):
        self.sim.events.append(["subscribe", topic, qos])

    def publish(self, topic, msg, retain=False, qos=0):
        self.sim.events.append(["publish", topic, _b64(msg), retain, qos])

    def check_msg(self):
        if self.sim.inbox:
            topic, payload = self.sim.inbox.pop(0)
            self.cb(topic.encode(), payload)

    def ping(self):
        pass


class Hal:
    def __init__(self, sim):
        self.sim = sim
        self.rand = sim.seed

    def init(self, cfg):
        pass

    def ticks_ms(self):
        return self.sim.now_ms % TICKS

    def ticks_diff(self, a, b):
        half = TICKS // 2
        return ((a - b + half) % TICKS) - half

    def ticks_add(self, a, b):
        return (a + b) % TICKS

    def sleep_ms(self, ms):
        pass

    def epoch(self):
        return self.sim.now_ms // 1000

    def random_below(self, n):
        self.rand = (self.rand * 1103515245 + 12345) & 0x7FFFFFFF
        return self.rand % n if n > 0 else 0

    def read_soc_bp(self):
        return self.sim.soc

    def read_power_w(self):
        return self.sim.power

    def take_pulses(self):
        out = (self.sim.imp, self.sim.exp)
        self.sim.imp = self.sim.exp = 0
        return out

    def set_lock(self, active):
        self.sim.lock = bool(active)

    def watchdog(self, ms):
        pass

    def feed(self):
        pass

    def network_up(self):
        return self.sim.link

    def mqtt_client(self, client_id, host, port, user, password, keepalive):
        return Bridge(self.sim)

    def log(self, msg):
        pass

    def reset(self):
        raise SystemExit("reset")


class Sim:
    def __init__(self, root, seed):
        self.root = root
        self.seed = seed
        self.now_ms = 0
        self.soc = 0
        self.power = 0
        self.imp = 0
        self.exp = 0
        self.lock = False
        self.link = False
        self.inbox = []
        self.events = []
        self.runner = None


SIM = None


def boot(root, seed, now_ms):
    global SIM
    SIM = Sim(root, seed)
    SIM.now_ms = now_ms
    with open(root + "/config.json") as f:
        cfg = fwconfig.parse(f.read())
    SIM.runner = Runner(Hal(SIM), root, cfg)


def step(req):
    """One request from the host: set the clock and sensors, queue received messages, run the
    firmware until it has handled them; print the events as one JSON line."""
    r = json.loads(req)
    sim = SIM
    sim.now_ms = r["now"]
    sim.soc = r["soc"]
    sim.power = r["power"]
    sim.imp += r["imp"]
    sim.exp += r["exp"]
    sim.link = r["link"]
    for topic, payload in r["inbox"]:
        sim.inbox.append((topic, binascii.a2b_base64(payload.encode())))
    sim.events = []
    n = 0
    while True:
        sim.runner.step()
        n += 1
        if not sim.inbox or n >= 32:
            break
    print(
        json.dumps(
            {
                "events": sim.events,
                "connected": sim.runner.client is not None,
                "refusals": sim.runner.meter.refusals,
                "lock": sim.lock,
            }
        )
    )
