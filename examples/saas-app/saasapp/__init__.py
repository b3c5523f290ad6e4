"""saas-app: the reference application deployed by tristage.

A small web app in the shape of a SaaS with auth (Clerk), payments and webhooks.
Standard library only; PostgreSQL through `psycopg` when DATABASE_URL asks for it.
"""
