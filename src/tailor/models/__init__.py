"""tailor.models"""
