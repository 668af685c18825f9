"""The test servers themselves start and answer."""

import asyncpg
import redis.asyncio as redis


async def test_redis_answers(redis_url: str) -> None:
    client = redis.from_url(redis_url)
    assert await client.ping() is True
    await client.aclose()


async def test_postgres_answers(postgres_url: str) -> None:
    conn = await asyncpg.connect(postgres_url)
    assert await conn.fetchval("select 1 + 1") == 2
    await conn.close()
