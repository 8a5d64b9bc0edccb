# Grid trading: resting buy orders on a ladder below a centre price; each filled buy is answered by a
# sell one step higher, and each filled sell by a new buy at its level. Profits from oscillation.
#
# CONFIG (all optional):
#   market          "BTCUSDT"   market to trade
#   levels          5           buy levels below the centre
#   spacing_pct     0.3         distance between levels, in percent
#   order_notional  50          value of each order, in the quote coin
# STATE keeps the centre and one entry per level: {"side": "buy" | "sell", "id": order id}.
# Needs max_orders_per_execution >= levels on the first run (the default, 10, is enough for 5).
# The names CONFIG, STATE, pd, np, client, log and RESULT are provided by the executor.
# ruff: noqa: F821
import math

market = CONFIG.get("market", "BTCUSDT")
levels = int(CONFIG.get("levels", 5))
spacing = float(CONFIG.get("spacing_pct", 0.3)) / 100
order_notional = float(CONFIG.get("order_notional", 50))

details = None
for item in client.get_markets_details():
    if item["coindcx_name"] == market:
        details = item
if details is None:
    raise ValueError("unknown market " + market)
price_digits = int(details["base_currency_precision"])
quantity_digits = int(details["target_currency_precision"])

ticker_price = None
for row in client.get_ticker():
    if row["market"] == market:
        ticker_price = float(row["last_price"])

if "centre" not in STATE:
    STATE["centre"] = ticker_price
    STATE["grid"] = {}
    STATE["round_trips"] = 0
centre = STATE["centre"]
grid = STATE["grid"]


def level_price(level):
    # Level 1 is one step below the centre; a level's sell sits one step above its buy.
    return round(centre * (1 - spacing * level), price_digits)


def quantity_at(price):
    scale = 10**quantity_digits
    return math.floor(order_notional / price * scale) / scale


placed = []
for level in range(1, levels + 1):
    key = str(level)
    entry = grid.get(key)
    if entry is not None:
        status = client.get_order_status(id=entry["id"])["status"]
        if status in ("open", "partially_filled", "init"):
            continue
        if status == "filled" and entry["side"] == "buy":
            sell_price = round(level_price(level) * (1 + spacing), price_digits)
            order = client.create_order("sell", "limit_order", market, entry["quantity"], sell_price)
            grid[key] = {"side": "sell", "id": order["id"], "quantity": entry["quantity"]}
            placed.append("sell@" + str(sell_price))
            continue
        if status == "filled" and entry["side"] == "sell":
            STATE["round_trips"] = STATE["round_trips"] + 1
    buy_price = level_price(level)
    quantity = quantity_at(buy_price)
    order = client.create_order("buy", "limit_order", market, quantity, buy_price)
    grid[key] = {"side": "buy", "id": order["id"], "quantity": quantity}
    placed.append("buy@" + str(buy_price))

STATE["grid"] = grid
log(market, "price", ticker_price, "centre", centre, "placed", placed)
RESULT = {
    "price": ticker_price,
    "centre": centre,
    "placed": placed,
    "open_orders": len(client.get_active_orders(market)),
    "round_trips": STATE["round_trips"],
}
