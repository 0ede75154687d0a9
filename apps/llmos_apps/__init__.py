"""llmos_apps: the built-in apps (calculator, python, browser, memory, imagegen), loaded as plugins."""
