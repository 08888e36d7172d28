"""Contact sheets: pictures side by side with a label under each (the Branch picker, tournament grids)."""

from __future__ import annotations

import io
import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

LABEL_HEIGHT = 22
GAP = 4


def contact_sheet(items: list[tuple[str, bytes | Path]], side: int = 192, columns: int | None = None) -> bytes:
    """A PNG grid of `items` (label, picture as bytes or a file), each scaled to fit `side` x `side`."""
    if not items:
        raise ValueError("nothing to put on the sheet")
    columns = columns or min(len(items), math.ceil(math.sqrt(len(items))) if len(items) > 3 else len(items))
    rows = math.ceil(len(items) / columns)
    cell_w, cell_h = side, side + LABEL_HEIGHT
    sheet = Image.new("RGB", (columns * cell_w + (columns + 1) * GAP, rows * cell_h + (rows + 1) * GAP), (24, 24, 28))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for index, (label, picture) in enumerate(items):
        data = picture.read_bytes() if isinstance(picture, Path) else picture
        image = Image.open(io.BytesIO(data)).convert("RGB")
        image.thumbnail((side, side))
        row, column = divmod(index, columns)
        x = GAP + column * (cell_w + GAP)
        y = GAP + row * (cell_h + GAP)
        sheet.paste(image, (x + (side - image.width) // 2, y + (side - image.height) // 2))
        draw.text((x + 4, y + side + 4), label, fill=(235, 235, 240), font=font)
    out = io.BytesIO()
    sheet.save(out, format="PNG", optimize=True)
    return out.getvalue()
