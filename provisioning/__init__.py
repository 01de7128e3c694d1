"""Installer tools: flash and register meters, set up gateways (``ngrid provision``)."""
