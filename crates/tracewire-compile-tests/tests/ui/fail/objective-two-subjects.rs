tracewire_macros::objective!(
    name = "mixed",
    http_route = "/orders",
    amqp_queue = "orders",
    availability = 99%
);

fn main() {}
