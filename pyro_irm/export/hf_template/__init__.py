"""The code an exported reward model carries with it (``trust_remote_code``); it imports only torch
and transformers, never pyro_irm."""
