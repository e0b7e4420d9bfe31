"""tailor.adapters"""
