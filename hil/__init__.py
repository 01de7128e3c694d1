"""Hardware-in-loop rig: firmware tests on real ESP32 boards, or on a virtual board by default."""
