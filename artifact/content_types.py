"""The request bodies the serving image takes and the answers it gives: serve/ answers by these,
a registered model package declares them, and data capture records them."""

IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp", "image/gif", "image/tiff",
               "application/x-image")  # one image's raw bytes (the format is sniffed)
JSON_TYPE = "application/json"  # {"images": [base64, ...]}
JSONLINES_TYPE = "application/jsonlines"  # one {"image": base64} per line
REQUEST_TYPES = IMAGE_TYPES + (JSON_TYPE, JSONLINES_TYPE)
RESPONSE_TYPES = (JSON_TYPE, JSONLINES_TYPE)
