"""The request bodies the serving image takes and the answers it gives: serve/ answers by these,
a registered model package declares them, and data capture records them."""

JPEG_TYPE, PNG_TYPE = "image/jpeg", "image/png"
ANY_IMAGE_TYPE = "application/x-image"  # an image of a format the caller does not name
IMAGE_TYPES = (JPEG_TYPE, PNG_TYPE, "image/webp", "image/bmp", "image/gif", "image/tiff",
               ANY_IMAGE_TYPE)  # one image's raw bytes (the format is sniffed)
JSON_TYPE = "application/json"  # {"images": [base64, ...]}
JSONLINES_TYPE = "application/jsonlines"  # one {"image": base64} per line
REQUEST_TYPES = IMAGE_TYPES + (JSON_TYPE, JSONLINES_TYPE)
RESPONSE_TYPES = (JSON_TYPE, JSONLINES_TYPE)
CSV_TYPE = "text/csv"  # not served; data capture is told it apart from JSON
