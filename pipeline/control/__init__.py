"""The control worker: the faust app and HTTP API, funding / recharge / expiry / notification
rules around the pure core, the payment gateway, ledger operations, the clock."""
