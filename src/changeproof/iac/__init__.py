"""Infrastructure changes: Terraform plans, Pulumi previews, drift checks and database
migrations, parsed into neutral evidence records (no judgement here; see controls/iac.py)."""
