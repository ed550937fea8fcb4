"""containerd: config.toml (schema versions 1, 2 and 3), its CRI plugin, and its live CRI config."""
