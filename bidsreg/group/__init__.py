"""The group level: participant outputs gathered with pandas into tables, figures and a report."""
