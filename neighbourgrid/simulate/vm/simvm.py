# The simulation's side of a meter in the MicroPython VM: the virtual meter's hal
# (hil/virtual/simhal.py's SimHal, uploaded next to this file) over a clock and sensors the host
# sets before each step, and umqtt.simple's client API whose traffic the host relays to the real
# broker (the WebAssembly port has no sockets). Runs on MicroPython; the firmware is unchanged.
import binascii
import json

import simhal
from ngmeter import config as fwconfig
from ngmeter.runner import Runner


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


class Sim:
    """What the host sets each step: the clock (ms since the epoch), the link, received messages
    and the sensors, in the battery shape SimHal reads (soc_bp(), power_w, import_wh/export_wh
    counters, lock; advance() does nothing: the host's physics runs per interval)."""

    def __init__(self, root, seed):
        self.root = root
        self.seed = seed
        self.now_ms = 0
        self.soc = 0
        self.power_w = 0
        self.import_wh = 0
        self.export_wh = 0
        self.lock = False
        self.link = False
        self.inbox = []
        self.events = []
        self.runner = None
        self.hal = None

    def soc_bp(self):
        return self.soc

    def advance(self, ms):
        pass

    def clock(self):
        return self.now_ms


SIM = None


def boot(root, seed, now_ms):
    global SIM
    SIM = Sim(root, seed)
    SIM.now_ms = now_ms
    with open(root + "/config.json") as f:
        cfg = fwconfig.parse(f.read())
    sim = SIM
    sim.hal = simhal.SimHal(simhal.HostClock(sim.clock), sim, lambda *args: Bridge(sim), seed)
    sim.hal.net_up = False
    SIM.runner = Runner(sim.hal, root, cfg)


def step(req):
    """One request from the host: set the clock and sensors, queue received messages, run the
    firmware until it has handled them; print the events as one JSON line."""
    r = json.loads(req)
    sim = SIM
    sim.now_ms = r["now"]
    sim.soc = r["soc"]
    sim.power_w = r["power"]
    sim.import_wh += r["imp"]
    sim.export_wh += r["exp"]
    sim.link = sim.hal.net_up = r["link"]
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
                "seq": sim.runner.store.seq,
                "lock": sim.lock,
            }
        )
    )
