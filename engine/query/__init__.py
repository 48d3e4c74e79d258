"""The query path: parse and policy, plan and plan cache, and the routes (accelerator, whole push-down, federated)."""
