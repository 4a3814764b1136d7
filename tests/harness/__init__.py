"""Sluice test harness: real Envoy, Redis, webdis and a scripted mock LLM provider on loopback."""
