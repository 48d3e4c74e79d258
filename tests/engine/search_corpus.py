"""A small review corpus for the search tests: topics a sentence-embedding model tells apart."""

from __future__ import annotations

import csv
import io

TOPICS = {
    "electronics": ["The battery lasts all day and charges quickly.",
                    "Battery life is poor, it dies before lunch.",
                    "The screen cracked after one week.",
                    "Bright display with sharp colours and good viewing angles.",
                    "The charger stopped working after a month."],
    "audio": ["Great sound from these headphones, deep bass and clear highs.",
              "The speaker distorts at high volume and the bass is muddy.",
              "Noise cancelling on these earbuds is excellent on flights.",
              "The microphone picks up every background noise."],
    "delivery": ["Shipping was slow but the customer service team was helpful.",
                 "The parcel arrived damaged and the box was soaked.",
                 "Delivery came a day early, well packed.",
                 "Tracking never updated and the courier lost my package."],
    "kitchen": ["This cookbook has delicious pasta recipes for weeknight dinners.",
                "The frying pan is non-stick and easy to clean.",
                "Our bread comes out perfect with this baking tin.",
                "The knife set is sharp and well balanced."],
    "shoes": ["Comfortable running shoes with good grip on wet roads.",
              "The boots leak water after a light rain.",
              "These sneakers run small, order a size up."],
}


def rows() -> list[tuple[int, str, str, str]]:
    out, i = [], 0
    for topic, texts in TOPICS.items():
        for text in texts:
            i += 1
            out.append((i, text, topic, f"2024-01-{i:02d}"))
    return out


def csv_text() -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["review_id", "body", "topic", "created_at"])
    w.writerows(rows())
    return buf.getvalue()


TOPICS_CSV = "topic,owner\n" + "".join(f"{t},team_{t}\n" for t in TOPICS)
