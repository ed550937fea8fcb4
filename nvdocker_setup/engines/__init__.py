"""Container engines behind one interface: one package each (docker, containerd)."""
