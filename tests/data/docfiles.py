"""Small documents the document tests write: PDFs by hand (Helvetica text, ruled tables), Word files with
python-docx, images with Pillow (Noto CJK for Chinese)."""

from __future__ import annotations

from pathlib import Path

CJK_FONT = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def page_ops(lines: list[tuple[float, str]] = (), table: list[list[str]] | None = None, table_top: float = 400,
             size_of=lambda i: 11) -> str:
    """Content stream: `lines` as (font size, text) from the top down, then an optional ruled table."""
    ops, y = [], 800.0
    for size, text in lines:
        y -= size * 1.9
        ops.append(f"BT /F1 {size} Tf 50 {y:.1f} Td ({_esc(text)}) Tj ET")
    if table:
        col_w, row_h = 150, 20
        y0 = table_top
        for r, row in enumerate(table):
            for c, cell in enumerate(row):
                x, y = 50 + c * col_w, y0 - (r + 1) * row_h
                ops.append(f"{x} {y} {col_w} {row_h} re S")
                ops.append(f"BT /F1 10 Tf {x + 4} {y + 6} Td ({_esc(cell)}) Tj ET")
    return "\n".join(ops)


def write_pdf(path: Path, pages: list[str], encrypt: bool = False) -> Path:
    """A PDF whose pages have the given content streams (Helvetica as /F1)."""
    objs = ["<< /Type /Catalog /Pages 2 0 R >>", None, "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for ops in pages:
        data = ops.encode("latin-1")
        objs.append(f"<< /Length {len(data)} >>\nstream\n{ops}\nendstream")
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> >> "
                    f"/Contents {len(objs)} 0 R >>")
        kids.append(len(objs))
    objs[1] = f"<< /Type /Pages /Kids [{' '.join(f'{k} 0 R' for k in kids)}] /Count {len(kids)} >>"
    trailer_extra = ""
    if encrypt:  # standard security handler whose user password is not empty: readers must ask for it
        objs.append("<< /Filter /Standard /V 1 /R 2 /O <" + "ab" * 32 + "> /U <" + "cd" * 32 + "> /P -4 >>")
        trailer_extra = f" /Encrypt {len(objs)} 0 R /ID [<{'01' * 16}> <{'01' * 16}>]"
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R{trailer_extra} >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(bytes(out))
    return path


def text_image(lines: list[str], size: int = 36, font: str | None = None):
    """A white image with black text lines (a clean scan)."""
    from PIL import Image, ImageDraw, ImageFont

    f = ImageFont.truetype(font or CJK_FONT, size)
    img = Image.new("RGB", (max(400, size * max(len(s) for s in lines) + 80), (len(lines) + 1) * size * 2), "white")
    d = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        d.text((40, 30 + i * size * 2), line, fill="black", font=f)
    return img
