"""An example xllm plugin: the ``counting`` dataset and the ``example-lm`` collator.

Install it with ``pip install -e plugins/xllm-example-plugin``; ``xllm plugins`` then lists both keys, and
``xllm download --dataset-key counting --counting-samples 500`` prepares its data.
"""
