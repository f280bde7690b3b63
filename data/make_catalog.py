"""Make the red-car demo catalog: listings.csv plus one drawn product photo per listing.

No photos of cars ship in any package this project can install, so each product
image is drawn here with Pillow (a flat-colour silhouette on a light backdrop).
Each PNG also carries its caption in the standard PNG "Description" text chunk,
which the test suite's fake encoder reads in place of real vision.

    python data/make_catalog.py            # rewrites data/catalog/ and data/shop/

data/shop/ is the same shop as its own export would come: keyed by sku, rows in no
particular order, a price missing (N/A), and the red car's photo a cutout (a
transparent PNG, as shops keep product photos); the other photos are the catalog's.
"""
from __future__ import annotations

import csv
from pathlib import Path

from PIL import Image, ImageDraw, PngImagePlugin

OUT = Path(__file__).resolve().parent / "catalog"
SHOP = Path(__file__).resolve().parent / "shop"
EXPORT_ORDER = [7, 2, 11, 0, 9, 4, 1, 10, 5, 3, 8, 6]  # positions in LISTINGS: an export without ORDER BY
PRICE_MISSING = 3  # the green vintage car's price: N/A
SIZE = (256, 192)
BACKDROP = (236, 236, 232)
COLOURS = {
    "red": (200, 30, 35), "blue": (35, 70, 190), "green": (40, 150, 60),
    "yellow": (235, 200, 30), "black": (25, 25, 25), "white": (250, 250, 250),
}

LISTINGS = [
    # id, title, description, colour, price, object
    (1, "Red sports car", "A red two-door sports car, low mileage, one owner.", "red", 18500, "car"),
    (2, "Blue family hatchback", "Blue five-door hatchback car with a big boot, serviced yearly.", "blue", 7900, "car"),
    (3, "Green vintage car", "Restored green vintage car from 1968, drives well.", "green", 22000, "car"),
    (4, "Red running shoes", "Light red running shoes, size 42, worn twice.", "red", 45, "shoe"),
    (5, "White sneakers", "Classic white leather sneakers, size 40.", "white", 60, "shoe"),
    (6, "Green cotton t-shirt", "Soft green cotton t-shirt, size M.", "green", 12, "shirt"),
    (7, "Blue t-shirt", "Plain blue t-shirt in organic cotton, size L.", "blue", 14, "shirt"),
    (8, "Yellow coffee mug", "Big yellow ceramic mug for coffee or tea.", "yellow", 8, "mug"),
    (9, "Red mug", "Glossy red mug, dishwasher safe.", "red", 9, "mug"),
    (10, "Black city bicycle", "Black city bicycle with seven gears and a basket.", "black", 240, "bicycle"),
    (11, "Yellow kids bicycle", "Small yellow bicycle for kids aged 4 to 6.", "yellow", 90, "bicycle"),
    (12, "Box of red apples", "A box of crisp red apples from a local farm.", "red", 6, "apple"),
]


def draw_car(d: ImageDraw.ImageDraw, fill) -> None:
    d.rounded_rectangle((28, 92, 228, 140), radius=14, fill=fill)
    d.polygon([(70, 92), (98, 58), (170, 58), (196, 92)], fill=fill)
    d.polygon([(84, 90), (102, 66), (130, 66), (130, 90)], fill=(190, 215, 235))
    d.polygon([(138, 90), (138, 66), (166, 66), (184, 90)], fill=(190, 215, 235))
    for x in (72, 184):
        d.ellipse((x - 20, 122, x + 20, 162), fill=(30, 30, 30))
        d.ellipse((x - 8, 134, x + 8, 150), fill=(160, 160, 160))


def draw_shoe(d, fill) -> None:
    d.polygon([(40, 150), (40, 80), (100, 80), (130, 110), (210, 120), (220, 150)], fill=fill)
    d.rectangle((40, 150, 220, 160), fill=(240, 240, 240) if fill != COLOURS["white"] else (60, 60, 60))


def draw_shirt(d, fill) -> None:
    d.polygon([(90, 40), (166, 40), (210, 70), (190, 100), (170, 88), (170, 170),
               (86, 170), (86, 88), (66, 100), (46, 70)], fill=fill)
    d.ellipse((108, 30, 148, 56), fill=BACKDROP)


def draw_mug(d, fill) -> None:
    d.rounded_rectangle((80, 50, 170, 160), radius=10, fill=fill)
    d.ellipse((150, 75, 205, 135), outline=fill, width=12)


def draw_bicycle(d, fill) -> None:
    for x in (70, 186):
        d.ellipse((x - 40, 100, x + 40, 180), outline=fill, width=7)
    d.line([(70, 140), (118, 140), (150, 92), (100, 92), (70, 140)], fill=fill, width=7)
    d.line([(118, 140), (100, 84), (186, 140), (160, 70)], fill=fill, width=7)


def draw_apple(d, fill) -> None:
    for x, y in ((95, 110), (160, 110), (128, 70)):
        d.ellipse((x - 34, y - 34, x + 34, y + 34), fill=fill)
        d.line([(x, y - 34), (x + 6, y - 48)], fill=(90, 60, 20), width=4)


DRAW = {"car": draw_car, "shoe": draw_shoe, "shirt": draw_shirt, "mug": draw_mug,
        "bicycle": draw_bicycle, "apple": draw_apple}


def main() -> None:
    images = OUT / "images"
    images.mkdir(parents=True, exist_ok=True)
    with open(OUT / "listings.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "title", "description", "colour", "price", "image"])
        for item_id, title, description, colour, price, kind in LISTINGS:
            name = f"{item_id:02d}-{colour}-{kind}.png"
            image = Image.new("RGB", SIZE, BACKDROP)
            DRAW[kind](ImageDraw.Draw(image), COLOURS[colour])
            info = PngImagePlugin.PngInfo()
            info.add_text("Description", f"{colour} {kind}")
            image.save(images / name, pnginfo=info, optimize=True)
            writer.writerow([item_id, title, description, colour, price, f"images/{name}"])
    shop_export()


def shop_export() -> None:
    """data/shop/products.csv and the red car's cutout."""
    (SHOP / "images").mkdir(parents=True, exist_ok=True)
    cutout = Image.new("RGBA", SIZE, (0, 0, 0, 0))  # transparent, and black where transparent
    draw_car(ImageDraw.Draw(cutout), COLOURS["red"] + (255,))
    info = PngImagePlugin.PngInfo()
    info.add_text("Description", "red car")
    cutout.save(SHOP / "images" / "red-car-cutout.png", pnginfo=info, optimize=True)
    with open(SHOP / "products.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sku", "title", "description", "colour", "price", "image"])
        for position in EXPORT_ORDER:
            item_id, title, description, colour, price, kind = LISTINGS[position]
            image = "images/red-car-cutout.png" if item_id == 1 else f"../catalog/images/{item_id:02d}-{colour}-{kind}.png"
            sku = f"{kind[:3].upper()}-{item_id:03d}"
            writer.writerow([sku, title, description, colour, "N/A" if item_id == PRICE_MISSING else price, image])


if __name__ == "__main__":
    main()
