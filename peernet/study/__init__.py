"""Studies: grids of simulator runs (`peernet sweep`) and their tables and plots (`peernet report`)."""
