"""Reports: the committed ledger read back from its topics (`readback`), finance's reports
built from it (`finance`: usage, pools, statement) and the chart (`chart`). The control
worker's API, the CLI and the operations commands read through here."""
