"""`python -m hms_resources.datasets.conversations` regenerates the two shipped datasets."""

from hms_resources.datasets.conversations import DEFAULT_ARGS, DEFAULT_PATH, HARD_ARGS, HARD_PATH, generate_conversations, write_jsonl

write_jsonl(generate_conversations(**DEFAULT_ARGS), DEFAULT_PATH)
write_jsonl(generate_conversations(**HARD_ARGS), HARD_PATH)
print(f"wrote {DEFAULT_PATH} and {HARD_PATH}")
