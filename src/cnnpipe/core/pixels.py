"""Pixel conventions the stages share, so the statistics preprocess fits and the layers the
model applies agree."""

# ITU-R BT.601 luma, the weights Pillow uses for mode "L" (decode.py converts with Pillow).
LUMA = (0.299, 0.587, 0.114)
