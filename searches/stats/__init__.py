"""Statistics: pyhf workspaces, CLs, limits, p-values and look-elsewhere corrections."""
