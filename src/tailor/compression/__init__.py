"""tailor.compression"""
