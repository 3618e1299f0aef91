"""Spot's contracts: messages, symbol specs, result codes, storage names."""
