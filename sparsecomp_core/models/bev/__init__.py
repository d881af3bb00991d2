"""BEV features: camera view transform, LiDAR branch, fuser (SPEC 5)."""
