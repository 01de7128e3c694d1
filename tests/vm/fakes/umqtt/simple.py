"""A stand-in for micropython-lib's ``umqtt.simple`` that records what hal.py asks of it."""

CREATED = []


class MQTTClient:
    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0):
        self.args = (client_id, server, port, user, password, keepalive)
        CREATED.append(self)
