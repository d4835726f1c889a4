"""Public entry points: input validation at the boundary, then one jit per entry point.

Conventions (checked here): images float32 NHWC in [-1, 1] (uint8 [H,W,3]/[B,H,W,3] and PIL images
are accepted and converted explicitly); camera labels ``c: [B, 25]`` = flattened 4x4 cam2world
(OpenCV axes, world y-up) + flattened 3x3 normalized intrinsics.
"""
from __future__ import annotations
