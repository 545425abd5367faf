"""subpixel: fast single-image and video super-resolution with ESPCN (Shi et al., 2016)."""

__version__ = "0.1.0"
